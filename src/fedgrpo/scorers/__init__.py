"""Client-side reward producers. They know nothing of transport or privacy."""
