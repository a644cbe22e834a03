//! SeaweedFS fixture (being written).
