//! `xnbd-server`: see `nbd_server_bin::xnbd::server`.

fn main() {
    nbd_server_bin::xnbd::server::main()
}
