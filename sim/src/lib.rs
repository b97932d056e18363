//! ZiggyDB's simulator.
