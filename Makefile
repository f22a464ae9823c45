PREFIX ?= /opt/cni/bin

.PHONY: build install test

build:
	cargo build --release --locked

# Copy then rename, so a kubelet exec never sees half a binary.
install: build
	install -d $(DESTDIR)$(PREFIX)
	install -m 0755 target/release/kube-ipam $(DESTDIR)$(PREFIX)/.kube-ipam.new
	mv -f $(DESTDIR)$(PREFIX)/.kube-ipam.new $(DESTDIR)$(PREFIX)/kube-ipam

test:
	scripts/test.sh
