# Package marker: evaluation metrics for trained generators.
