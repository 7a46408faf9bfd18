"""Feature extractors (callable classes run as Ray Data actors) and the extraction job."""
