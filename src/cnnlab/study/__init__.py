"""Studies: many runs of one experiment (a matrix, named variants, a ladder of steps) over
repeated seeds, cross-evaluated, summarised with statistics, and written as study.html and
paper-ready tables; `compare` puts any finished runs side by side."""
