#!/bin/sh
# install.sh installs mrbacd where a systemd host expects it; `make install`
# calls it. Usage:
#
#   DESTDIR=/tmp/pkg PREFIX=/usr/local deploy/install.sh bin/mrbacd
#
# Installs the binary to $PREFIX/bin, the unit to /etc/systemd/system (with
# ExecStart pointing at $PREFIX/bin/mrbacd), the example config and env file
# to /etc/mrbacd (as mrbacd.yaml and mrbacd.env only when those do not exist
# yet, always as *.example), and the README to $PREFIX/share/doc/mrbacd.
set -eu

binary=${1:?usage: install.sh PATH-TO-MRBACD-BINARY}
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)

install -d -m 0755 "$DESTDIR$PREFIX/bin" "$DESTDIR/etc/systemd/system" "$DESTDIR$PREFIX/share/doc/mrbacd"
install -d -m 0755 "$DESTDIR/etc/mrbacd"
install -m 0755 "$binary" "$DESTDIR$PREFIX/bin/mrbacd"
sed "s#/usr/local/bin/mrbacd#$PREFIX/bin/mrbacd#g; s#/usr/local/share/doc/mrbacd#$PREFIX/share/doc/mrbacd#g" \
	"$here/systemd/mrbacd.service" > "$DESTDIR/etc/systemd/system/mrbacd.service"
chmod 0644 "$DESTDIR/etc/systemd/system/mrbacd.service"
install -m 0644 "$here/mrbacd.example.yaml" "$DESTDIR/etc/mrbacd/mrbacd.yaml.example"
install -m 0600 "$here/systemd/mrbacd.env.example" "$DESTDIR/etc/mrbacd/mrbacd.env.example"
[ -e "$DESTDIR/etc/mrbacd/mrbacd.yaml" ] || install -m 0644 "$here/mrbacd.example.yaml" "$DESTDIR/etc/mrbacd/mrbacd.yaml"
[ -e "$DESTDIR/etc/mrbacd/mrbacd.env" ] || install -m 0600 "$here/systemd/mrbacd.env.example" "$DESTDIR/etc/mrbacd/mrbacd.env"
install -m 0644 "$repo/README.md" "$DESTDIR$PREFIX/share/doc/mrbacd/README.md"
echo "installed mrbacd under ${DESTDIR:-/}; next: edit /etc/mrbacd/mrbacd.yaml and mrbacd.env, then" \
	"mrbacd check --config /etc/mrbacd/mrbacd.yaml && systemctl daemon-reload && systemctl enable --now mrbacd"
