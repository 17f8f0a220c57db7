"""Sources: where versions are found (TF sources/): storage listing, publication rules, local cache."""
