#!/bin/sh
# An up-script with DHTNet's arguments (script_path), for dvpn's and DHTNet's dvpn alike:
#   $1 ptp_address  $2 tun_address  $3 tun  $4 server (the peer's public address)  $5 "true" on a client
#   $6 tun_address_ipv6  $7 ptp_address_ipv6
# Unlike DHTNet's dvpn_up.sh it brings the link up before adding the IPv6 address (on a TUN that is still down the
# kernel adds no route to the IPv6 peer) and leaves routing and NAT alone.
set -e
ip link set dev "$3" up
[ -n "$6" ] && ip -6 addr add "$6" peer "$7" dev "$3" nodad
ip addr add "$2" peer "$1" dev "$3"
echo "TUN interface $3 is up: $2 <-> $1${6:+, $6 <-> $7}"
