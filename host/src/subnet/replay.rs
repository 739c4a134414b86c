//! Rebuilding a subnet's state from its log alone.
