//! The typed columns of each topic the lake knows, one module per topic; any other topic
//! gets the common columns only ([`other`]).

pub(crate) mod conversations;
pub(crate) mod feedback;
pub(crate) mod kpis;
pub(crate) mod other;
pub(crate) mod profiles;
