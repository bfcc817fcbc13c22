# make && make install [DESTDIR=...] [PREFIX=/usr]
# `install` does not build: run `make` (or cargo build --release) first, or
# point BIN at a built binary.

PREFIX ?= /usr
LIBEXECDIR ?= $(PREFIX)/libexec
SBINDIR ?= $(PREFIX)/sbin
UDEVRULESDIR ?= $(PREFIX)/lib/udev/rules.d
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
MANDIR ?= $(PREFIX)/share/man
DATADIR ?= $(PREFIX)/share
BIN ?= target/release/hotplug-hook

.PHONY: all install uninstall

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

uninstall:
	rm -f $(DESTDIR)$(LIBEXECDIR)/hotplug-hook $(DESTDIR)$(SBINDIR)/hotplug-hook \
		$(DESTDIR)$(UDEVRULESDIR)/90-hotplug-hook.rules \
		$(DESTDIR)$(SYSTEMDUNITDIR)/hotplug-hook-worker@.service \
		$(DESTDIR)$(SYSTEMDUNITDIR)/hotplug-hook-scan.service \
		$(DESTDIR)$(SYSTEMDUNITDIR)/hotplug-hook-reconcile.service \
		$(DESTDIR)$(MANDIR)/man8/hotplug-hook.8 \
		$(DESTDIR)$(DATADIR)/bash-completion/completions/hotplug-hook \
		$(DESTDIR)$(DATADIR)/zsh/vendor-completions/_hotplug-hook \
		$(DESTDIR)$(DATADIR)/fish/vendor_completions.d/hotplug-hook.fish
