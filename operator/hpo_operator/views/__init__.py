"""Views of one experiment for people: status text, plots and an HTML report, for a local run or a cluster."""
