//! Exporting and importing a subnet's log.
