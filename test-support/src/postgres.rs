//! PostgreSQL fixture (being written).
