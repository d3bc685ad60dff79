//! eatnas-nn: architecture files of the EAT-NAS search space (`eatnas-arch/1`), their MAdds and
//! parameter counts, the layers (ConvBN, MBConv, SepConv, head) and whole networks with the
//! parameter names of `shared/spec/ARCH.md`, forward and backward, in training and inference mode.

pub mod arch;
pub mod counting;
pub mod elastic;
mod error;
pub mod init;
pub mod layers;
pub mod network;

pub use arch::{Arch, Block, Head, LayerSpec, Op, Stem};
pub use counting::{training_bytes, Counts, PartCount};
pub use elastic::{inherit, Inheritance};
pub use error::{Error, Result};
pub use init::{Init, InitScheme};
pub use layers::{Mode, Param, Slot};
pub use network::Network;
