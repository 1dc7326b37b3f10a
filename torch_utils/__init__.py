# Package marker: torch_utils holds ops and utilities that pickled networks import by name.
