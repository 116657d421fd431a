//! `xnbd-bgctl`: see `nbd_server_bin::xnbd::bgctl`.

fn main() {
    nbd_server_bin::xnbd::bgctl::main()
}
