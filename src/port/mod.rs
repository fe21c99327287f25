#[cfg(feature = "dpdk")]
#[allow(unsafe_code)]
pub mod dpdk;
