//! SDK for Trac contract authors.
