//! Bridge networking for berthd: subnets and addresses (`ipam`), network namespaces
//! (`netns`), bridges and veth pairs over netlink (`link`), NAT, published ports and
//! isolation in nftables' `table inet berth` (`nft`), the accepts berth needs in the
//! host's iptables filter tables (`hostfw`) and firewalld's zones (`firewalld`), and the
//! embedded DNS server of user-defined networks (`dns`).

pub mod claim;
pub mod dns;
pub mod firewalld;
pub mod hostfw;
pub mod ipam;
pub mod link;
pub mod netns;
pub mod nft;
