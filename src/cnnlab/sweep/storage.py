"""The Optuna study of a sweep, in an SQLAlchemy database: opened (the tables made once, even
when the first workers of a fresh database start together), its sampler and pruner, and the
checks that the study found there is this sweep's."""

from __future__ import annotations

import json
import random
import time
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from cnnlab.errors import ConfigError
from cnnlab.sweep.spec import Sweep

if TYPE_CHECKING:
    import optuna

# A worker's heartbeat, seconds: a trial whose worker was killed is failed (and replaced) once
# it has been silent for GRACE seconds; Optuna does it when any worker starts a trial.
HEARTBEAT, GRACE = 10, 60
SPEC_ATTR = "cnnlab_sweep"  # the study's user attribute holding what the sweep searches


def optuna_module() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError(
            "cnnlab sweep needs Optuna: pip install 'cnnlab[sweep]' (or pip install optuna)"
        ) from None
    return optuna


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's log lines (study made, trial finished or failed) and experimental-feature
    warnings held back: the sweep prints one line of its own per trial."""
    optuna = optuna_module()
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def shown(url: str) -> str:
    """The storage URL as printed and saved: its password hidden."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: opening it says why
        return url


def open_storage(url: str) -> optuna.storages.RDBStorage:
    optuna = optuna_module()
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    sqlite = url.startswith("sqlite")
    if sqlite and url.rstrip("/") in ("sqlite:", "sqlite:/", "sqlite:///:memory:", "sqlite:"):
        raise ConfigError(
            f"--storage {url}: an in-memory database dies with each worker; give a file "
            "(sqlite:///sweep.db) or leave --storage out for the sweep folder's optuna.db"
        )
    # SQLite: wait for another worker's write instead of failing at once ("database is locked")
    engine: dict[str, Any] = (
        {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
    )
    problem = ""
    for attempt in range(6):
        try:
            with warnings.catch_warnings():  # the heartbeat is marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT, grace_period=GRACE
                )
        except ArgumentError:
            raise ConfigError(
                f"--storage {url}: not a database URL; give an SQLAlchemy URL such as "
                "sqlite:///sweep.db or postgresql://user@host/db"
            ) from None
        except ImportError as err:
            raise ConfigError(
                f"--storage {shown(url)}: {_missing_driver(err)} (SQLAlchemy's driver for this "
                "URL) is not installed; install that driver (PostgreSQL: pip install "
                "'psycopg[binary]', for postgresql:// and postgresql+psycopg://)"
            ) from None
        except SQLAlchemyError as err:
            # workers starting together on a fresh database race to make Optuna's tables
            # (optuna/optuna#1092): the loser sees them half made and tries again
            problem = str(err).splitlines()[0]
            time.sleep(0.2 + random.random() * attempt)
    raise ConfigError(f"--storage {shown(url)}: cannot open the database: {problem}")


def _missing_driver(err: ImportError) -> str:
    """The module SQLAlchemy failed to import (Optuna re-raises it under its own message)."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ImportError) and cause.name:
            return cause.name
        cause = cause.__cause__
    return "the database driver"


def sampler_for(sweep: Sweep, worker: int, trials_before: int, shared: bool) -> Any:
    """Seeded by the sweep's seed, so one worker on a fresh study is reproducible; each local
    worker, each later invocation and (with a shared --storage) each process gets its own
    stream, or their first random trials would all be the same."""
    optuna = optuna_module()
    seed = sweep.spec.seed + worker + 1009 * trials_before
    if shared:
        import os
        import socket

        seed += zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode())
    seed %= 2**32
    if sweep.spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    from cnnlab.sweep.sampler import RandomAfterFailure

    # constant_liar: other workers' running trials count as seen, so they sample elsewhere
    tpe = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    return RandomAfterFailure(tpe, optuna.samplers.RandomSampler(seed=(seed + 1) % 2**32))


def pruner_for(sweep: Sweep) -> Any:
    optuna = optuna_module()
    config = sweep.spec.pruner
    if config.name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=config.startup_trials, n_warmup_steps=config.warmup_epochs
        )
    if config.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=config.min_epochs, reduction_factor=config.reduction_factor
        )
    return optuna.pruners.NopPruner()


def fingerprint(sweep: Sweep) -> dict[str, Any]:
    """What makes trials of one study comparable: the metric, its direction and the space."""
    space = {key: param.model_dump(mode="json") for key, param in sweep.spec.space.items()}
    return json.loads(json.dumps({"metric": sweep.spec.metric, "space": space}))


def refuse_orphans(sweep: Sweep) -> None:
    """Trial folders of a study the storage does not hold: new trials would be numbered from 0
    again, into those folders."""
    if sweep.folder.is_dir() and any(sweep.folder.glob("trial-*")):
        raise ConfigError(
            f"{sweep.folder} holds trial folders, but the storage has no study {sweep.name} "
            "(its optuna.db deleted, or another --storage): delete or move that folder, or "
            "give the sweep another name: (or output.name:)"
        )


def create_or_check(sweep: Sweep, storage: Any) -> optuna.Study:
    """The sweep's study in `storage`, made on first use; a study of that name made by another
    sweep (metric, direction or space differ) is refused rather than mixed with this one."""
    optuna = optuna_module()
    try:
        storage.get_study_id_from_name(sweep.name)
        new = False
    except KeyError:
        new = True
    if new:
        refuse_orphans(sweep)
    study = optuna.create_study(
        storage=storage, study_name=sweep.name, direction=sweep.direction, load_if_exists=True
    )
    if study.direction.name.lower() != sweep.direction:
        raise ConfigError(
            f"the storage's study {sweep.name} is {study.direction.name.lower()}d, this sweep "
            f"{sweep.direction}s {sweep.spec.metric}: give the sweep another name:"
        )
    saved = study.user_attrs.get(SPEC_ATTR)
    mine = fingerprint(sweep)
    if saved is None:
        study.set_user_attr(SPEC_ATTR, mine)
    elif saved != mine:
        changed = sorted(key for key in mine if saved.get(key) != mine[key])
        raise ConfigError(
            f"the storage's study {sweep.name} was made by a sweep with another "
            f"{' and '.join(changed)}; its trials would not compare with these: give the sweep "
            "another name: (or delete the study)"
        )
    return study
