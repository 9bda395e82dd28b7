"""`fedgrpo bench`: every method on one budget, over seeds, with exact bytes; a report and plots."""
