"""FairPrune core library."""
