PREFIX ?= /opt/cni/bin

.PHONY: build install convert-store test

build:
	cargo build --release --locked

# Copy then rename, so a kubelet exec never sees half a binary.
install: build
	install -d $(DESTDIR)$(PREFIX)
	install -m 0755 target/release/kube-ipam $(DESTDIR)$(PREFIX)/.kube-ipam.new
	mv -f $(DESTDIR)$(PREFIX)/.kube-ipam.new $(DESTDIR)$(PREFIX)/kube-ipam

# Only to upgrade a node whose embedded store an earlier release kept in sled (see
# docs/migration.md): target/release/kube-ipam-convert-store, run once per network.
convert-store:
	cargo build --release --locked --features sled --bin kube-ipam-convert-store

test:
	scripts/test.sh
