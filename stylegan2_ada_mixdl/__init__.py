"""Few-shot regularisers (MixDL and friends) that plug into training/ through its public hooks."""
