//! Linearizability checking of key-value histories (work in progress).
