//! ZiggyDB's real runtime.
