# make && make install [DESTDIR=...] [PREFIX=/usr]
# `install` does not build: run `make` (or cargo build --release) first, or
# point BIN at a built binary.
# make deb         the .deb for this machine (target/debian/), from
#                  [package.metadata.deb] in Cargo.toml, the one packaging source
# make deb-arm64   the arm64 .deb (Graviton): needs `rustup target add
#                  aarch64-unknown-linux-gnu` and Debian's gcc-aarch64-linux-gnu
#                  libc6-dev-arm64-cross
# Both need cargo-deb (cargo install cargo-deb --locked).

PREFIX ?= /usr
LIBEXECDIR ?= $(PREFIX)/libexec
SBINDIR ?= $(PREFIX)/sbin
UDEVRULESDIR ?= $(PREFIX)/lib/udev/rules.d
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
MANDIR ?= $(PREFIX)/share/man
DATADIR ?= $(PREFIX)/share
DOCDIR ?= $(DATADIR)/doc/hotplug-hook
BIN ?= target/release/hotplug-hook
ARM64 = aarch64-unknown-linux-gnu

.PHONY: all install uninstall completions deb deb-arm64

all:
	cargo build --release --locked

install:
	test -x $(BIN) || { echo "no $(BIN): run make first" >&2; exit 1; }
	install -D -m 0755 $(BIN) $(DESTDIR)$(LIBEXECDIR)/hotplug-hook
	install -d $(DESTDIR)$(SBINDIR)
	ln -sf $(LIBEXECDIR)/hotplug-hook $(DESTDIR)$(SBINDIR)/hotplug-hook
	install -d $(DESTDIR)$(UDEVRULESDIR) $(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(MANDIR)/man8
	sed 's|/usr/libexec/hotplug-hook|$(LIBEXECDIR)/hotplug-hook|' udev-rules/90-hotplug-hook.rules \
		> $(DESTDIR)$(UDEVRULESDIR)/90-hotplug-hook.rules
	for u in hotplug-hook-worker@.service hotplug-hook-scan.service hotplug-hook-reconcile.service; do \
		sed 's|/usr/libexec/hotplug-hook|$(LIBEXECDIR)/hotplug-hook|' systemd/$$u \
			> $(DESTDIR)$(SYSTEMDUNITDIR)/$$u || exit 1; \
	done
	chmod 0644 $(DESTDIR)$(UDEVRULESDIR)/90-hotplug-hook.rules $(DESTDIR)$(SYSTEMDUNITDIR)/hotplug-hook-*.service
	install -m 0644 man/hotplug-hook.8 $(DESTDIR)$(MANDIR)/man8/hotplug-hook.8
	install -d $(DESTDIR)$(DATADIR)/bash-completion/completions $(DESTDIR)$(DATADIR)/zsh/vendor-completions \
		$(DESTDIR)$(DATADIR)/fish/vendor_completions.d
	$(BIN) --config /dev/null completions bash > $(DESTDIR)$(DATADIR)/bash-completion/completions/hotplug-hook
	$(BIN) --config /dev/null completions zsh > $(DESTDIR)$(DATADIR)/zsh/vendor-completions/_hotplug-hook
	$(BIN) --config /dev/null completions fish > $(DESTDIR)$(DATADIR)/fish/vendor_completions.d/hotplug-hook.fish
	install -D -m 0644 -t $(DESTDIR)$(DOCDIR) README.md contrib/config/config.example.json contrib/config/config.example.md

uninstall:
	rm -f $(DESTDIR)$(LIBEXECDIR)/hotplug-hook $(DESTDIR)$(SBINDIR)/hotplug-hook \
		$(DESTDIR)$(UDEVRULESDIR)/90-hotplug-hook.rules \
		$(DESTDIR)$(SYSTEMDUNITDIR)/hotplug-hook-worker@.service \
		$(DESTDIR)$(SYSTEMDUNITDIR)/hotplug-hook-scan.service \
		$(DESTDIR)$(SYSTEMDUNITDIR)/hotplug-hook-reconcile.service \
		$(DESTDIR)$(MANDIR)/man8/hotplug-hook.8 \
		$(DESTDIR)$(DATADIR)/bash-completion/completions/hotplug-hook \
		$(DESTDIR)$(DATADIR)/zsh/vendor-completions/_hotplug-hook \
		$(DESTDIR)$(DATADIR)/fish/vendor_completions.d/hotplug-hook.fish \
		$(DESTDIR)$(DOCDIR)/README.md $(DESTDIR)$(DOCDIR)/config.example.json $(DESTDIR)$(DOCDIR)/config.example.md

# cargo-deb packages files that exist: the completions are generated here,
# by the binary built for this machine (they are the same for every
# architecture), before `cargo deb` runs.
completions: all
	mkdir -p target/completions
	$(BIN) --config /dev/null completions bash > target/completions/hotplug-hook.bash
	$(BIN) --config /dev/null completions zsh > target/completions/_hotplug-hook
	$(BIN) --config /dev/null completions fish > target/completions/hotplug-hook.fish

# --no-build: the package holds the very binary `all` built.
deb: completions
	cargo deb --locked --no-build

# The completions come from this machine's binary; the package's from the
# cross build (linked by Debian's cross gcc; cargo-deb strips it with
# aarch64-linux-gnu-strip, or the release profile's strip already has).
deb-arm64: completions
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
		cargo build --release --locked --target $(ARM64)
	cargo deb --locked --no-build --target $(ARM64)

# make install-ec2-net-utils: on hosts with amazon-ec2-net-utils, let
# hotplug-hook drive its per-interface units (backend "ec2-net-utils"):
# masks the package's udev rule, which acts on every remove (driver reloads
# included), with a same-named /dev/null link in /etc/udev/rules.d/, and sets
# the backend in the config file when there is none yet. Then
# `udevadm control --reload`. uninstall-ec2-net-utils unmasks it.
SYSCONFDIR ?= /etc
EC2_NET_UTILS_RULE = $(DESTDIR)$(SYSCONFDIR)/udev/rules.d/99-vpc-policy-routes.rules
HOOK_CONFIG = $(DESTDIR)$(SYSCONFDIR)/hotplug-hook/config.json

.PHONY: install-ec2-net-utils uninstall-ec2-net-utils

install-ec2-net-utils:
	install -d $(DESTDIR)$(SYSCONFDIR)/udev/rules.d
	ln -sfn /dev/null $(EC2_NET_UTILS_RULE)
	if [ -e $(HOOK_CONFIG) ]; then \
		echo "$(HOOK_CONFIG) exists: set \"backend\": \"ec2-net-utils\" in it" >&2; \
	else \
		install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/hotplug-hook && \
		echo '{ "backend": "ec2-net-utils" }' > $(HOOK_CONFIG) && chmod 0644 $(HOOK_CONFIG); \
	fi

uninstall-ec2-net-utils:
	if [ "$$(readlink $(EC2_NET_UTILS_RULE))" = /dev/null ]; then rm -f $(EC2_NET_UTILS_RULE); fi
