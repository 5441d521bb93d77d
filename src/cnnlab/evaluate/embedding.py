"""Feature vectors in two dimensions: PCA and t-SNE (scikit-learn), and UMAP when `umap` is
importable (umap-learn; not a dependency: it brings numba).

t-SNE (500 iterations, Barnes-Hut) costs 1-2.5 s for 500 points and 2.5-5 s for 1,000 on one
core (idle to busy), growing faster than linearly, so callers cap the points (`sample`). It
runs on one thread: scikit-learn's OpenMP threads spin while they wait, and on a CPU busy with
other work (a study's parallel cells, other users) two of them made it 7x slower. Every method
is seeded: the same features give the same picture. t-SNE and UMAP read the first PCA_DIMS
principal components, the usual first step (faster, and less noise, than thousands of raw
features).
"""

from __future__ import annotations

import numpy as np

PCA_DIMS = 50
TSNE_ITERATIONS = 500  # the picture settles well before scikit-learn's default of 1,000
MIN_POINTS = 5  # fewer: no neighbourhoods for t-SNE or UMAP to keep


def sample(count: int, cap: int, seed: int) -> np.ndarray:
    """Sorted indices of at most `cap` of `count` items, a seeded random choice."""
    if count <= cap:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=cap, replace=False))


def embed(features: np.ndarray, seed: int) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(method -> (N, 2) float32 coordinates, method -> why it was not drawn)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # see the module's docstring
        return _embed(features, seed)


def _embed(features: np.ndarray, seed: int) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from sklearn.decomposition import PCA  # scikit-learn: only once a run is over

    vectors = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    count = len(vectors)
    if count < 2:
        return {}, {"PCA": f"{count} image: nothing to place"}
    dims = min(PCA_DIMS, count, vectors.shape[1])
    components = PCA(n_components=dims, random_state=seed).fit_transform(vectors)
    coordinates = {"PCA": _two_columns(components)}
    skipped: dict[str, str] = {}
    if count < MIN_POINTS:
        skipped["t-SNE"] = f"{count} images: too few for neighbourhoods"
        return coordinates, skipped
    coordinates["t-SNE"] = _tsne(components, seed)
    umap = _umap_or_reason(components, seed)
    if isinstance(umap, str):
        skipped["UMAP"] = umap
    else:
        coordinates["UMAP"] = umap
    return coordinates, skipped


def _two_columns(components: np.ndarray) -> np.ndarray:
    """The first two components; one feature (or identical images) leaves the second at 0."""
    out = np.zeros((len(components), 2), dtype=np.float32)
    width = min(2, components.shape[1])
    out[:, :width] = components[:, :width]
    return out


def _tsne(components: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    perplexity = min(30.0, (len(components) - 1) / 3)  # must stay below the number of points
    tsne = TSNE(
        n_components=2,
        perplexity=perplexity,
        init="pca",
        learning_rate="auto",
        max_iter=TSNE_ITERATIONS,
        random_state=seed,
    )
    return tsne.fit_transform(components).astype(np.float32)


def _umap_or_reason(components: np.ndarray, seed: int) -> np.ndarray | str:
    try:
        import umap  # type: ignore[import-not-found]
    except ImportError:
        return "not installed (pip install umap-learn)"
    neighbours = min(15, len(components) - 1)
    reducer = umap.UMAP(n_components=2, n_neighbors=neighbours, random_state=seed)
    return np.asarray(reducer.fit_transform(components), dtype=np.float32)
