# What a distribution ships, checked as a packager and an outside program would use it.
#
#   make install-check  checks that `make install` after `make` writes nothing into the build
#                       tree, installs into a temporary DESTDIR with PREFIX=/usr, checks the tree
#                       (files, soname links, the soname and symbol versions, the pkg-config
#                       file's prefix and that --define-prefix relocates it, no RUNPATH in any
#                       installed ELF), then builds examples/c/quickstart.c and the C++ wrapper's
#                       example against it with pkg-config and runs them: shared, --static from
#                       libtshm.a, and fully -static
#   make check-man      the man pages render at 80 columns without a warning (man -l, groff -ww),
#                       lexgrog finds their NAME lines, and libtshm(3)'s table of result codes
#                       matches tshm.h (numbers, and which ones are reserved)
#   make abi-check      compares the built libtshm.so with the committed ABI (abi/libtshm.abi,
#                       abidw's description of the release library) using abidiff: any change
#                       to an exported function or a type it reaches fails
#   make abi-baseline   rewrites abi/libtshm.abi from the built library (a release that means
#                       to change the ABI, with a new soname). abi/suppressions names what is
#                       not ABI: the opaque handle's own fields

ABI_BASELINE := abi/libtshm.abi
ABIDW_FLAGS  := --no-corpus-path --no-comp-dir-path --no-show-locs

.PHONY: install-check abi-check abi-baseline check-man

MAN_PAGES := docs/man/tshm.1 docs/man/libtshm.3

check-man:
	@set -e; for m in $(MAN_PAGES); do \
	    w=$$(MANWIDTH=80 LC_ALL=C.UTF-8 man --warnings -l $$m 2>&1 >/dev/null); \
	    [ -z "$$w" ] || { echo "check-man: $$m: $$w"; exit 1; }; \
	    lexgrog $$m >/dev/null || { echo "check-man: lexgrog finds no NAME line in $$m"; exit 1; }; \
	done
	@python3 scripts/man_codes.py include/tshm.h src/error.rs docs/man/libtshm.3

install-check: all
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; d=$$tmp/root; \
	touch $$tmp/stamp; $(MAKE) --no-print-directory install DESTDIR=$$tmp/same >$$tmp/install.log; \
	new=$$(find $(B) $(RELEASE) -maxdepth 2 -newer $$tmp/stamp \( -type f -o -type l \) ! -name .cargo-lock); \
	[ -z "$$new" ] || { echo "install-check: make install after make wrote into the build tree:" $$new; exit 1; }; \
	rm -rf $$tmp/same; \
	$(MAKE) --no-print-directory install DESTDIR=$$d PREFIX=/usr >$$tmp/install.log; \
	for f in include/tshm.h include/tshm.hpp lib/libtshm.a lib/libtshm.so.$(VERSION) lib/$(SONAME) \
	         lib/libtshm.so lib/pkgconfig/tshm.pc bin/tshm lib/libtshm_sqlite.so share/man/man1/tshm.1 \
	         share/man/man3/libtshm.3 share/bash-completion/completions/tshm \
	         share/zsh/vendor-completions/_tshm share/fish/vendor_completions.d/tshm.fish; do \
	    [ -e $$d/usr/$$f ] || { echo "install-check: /usr/$$f not installed"; exit 1; }; \
	done; \
	[ "$$(readlink $$d/usr/lib/libtshm.so)" = $(SONAME) ] || { echo "install-check: libtshm.so -> $(SONAME) missing"; exit 1; }; \
	grep -qx 'prefix=/usr' $$d/usr/lib/pkgconfig/tshm.pc || { echo "install-check: tshm.pc does not name /usr"; exit 1; }; \
	reloc=$$(PKG_CONFIG_PATH=$$d/usr/lib/pkgconfig pkg-config --define-prefix --variable=includedir tshm); \
	[ "$$reloc" = $$d/usr/include ] || { echo "install-check: pkg-config --define-prefix gives includedir $$reloc, not $$d/usr/include"; exit 1; }; \
	for f in lib/libtshm_sqlite.so lib/libtshm.so.$(VERSION) bin/tshm; do \
	    if readelf -d $$d/usr/$$f | grep -qE 'RPATH|RUNPATH'; then \
	        echo "install-check: the installed /usr/$$f has a RUNPATH"; exit 1; fi; \
	done; \
	readelf -d $$d/usr/lib/libtshm.so.$(VERSION) | grep -q "SONAME.*\[$(SONAME)\]" || { echo "install-check: the installed library lacks SONAME $(SONAME)"; exit 1; }; \
	objdump -T $$d/usr/lib/libtshm.so.$(VERSION) | awk '$$NF ~ /^tshm_/ {n++; if ($$(NF-1) != "TSHM_0.1") bad = bad " " $$NF} \
	    $$NF !~ /^tshm_/ && $$NF != "TSHM_0.1" && $$2 == "g" {bad = bad " " $$NF} \
	    END {if (bad != "" || n == 0) {print "install-check: exports outside TSHM_0.1 or not tshm_*:" bad; exit 1}}'; \
	export PKG_CONFIG_PATH=$$d/usr/lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$$d; \
	cflags=$$(pkg-config --cflags tshm); libs=$$(pkg-config --libs tshm); \
	static=$$(pkg-config --static --libs tshm | sed 's/-ltshm\b/-l:libtshm.a/'); \
	full=$$(pkg-config --static --libs tshm); \
	$(CC) -std=c11 -Wall -Wextra -Werror -o $$tmp/c-shared examples/c/quickstart.c $$cflags $$libs; \
	$(CC) -std=c11 -Wall -Wextra -Werror -o $$tmp/c-static examples/c/quickstart.c $$cflags $$static; \
	$(CC) -std=c11 -Wall -Wextra -Werror -static -o $$tmp/c-full examples/c/quickstart.c $$cflags $$full \
	    2>$$tmp/static.log || { cat $$tmp/static.log; exit 1; }; \
	$(CXX) -std=c++17 -Wall -Wextra -Werror -o $$tmp/cpp-shared examples/cpp/example.cpp $$cflags $$libs; \
	$(CXX) -std=c++17 -Wall -Wextra -Werror -static -o $$tmp/cpp-full examples/cpp/example.cpp $$cflags $$full \
	    2>$$tmp/static.log || { cat $$tmp/static.log; exit 1; }; \
	readelf -d $$tmp/c-shared | grep -q "NEEDED.*\[$(SONAME)\]" || { echo "install-check: not linked to $(SONAME)"; exit 1; }; \
	if readelf -d $$tmp/c-static | grep -q "NEEDED.*libtshm"; then echo "install-check: --static needs libtshm.so"; exit 1; fi; \
	if readelf -d $$tmp/c-full | grep -q NEEDED; then echo "install-check: -static has NEEDED entries"; exit 1; fi; \
	for p in c-shared c-static c-full cpp-shared cpp-full; do \
	    LD_LIBRARY_PATH=$$d/usr/lib $$tmp/$$p $$tmp >$$tmp/$$p.log 2>&1 || { cat $$tmp/$$p.log; echo "install-check: $$p failed"; exit 1; }; \
	done; \
	LD_LIBRARY_PATH=$$d/usr/lib sqlite3 :memory: ".load $$d/usr/lib/libtshm_sqlite.so" \
	    "SELECT 1" >/dev/null || { echo "install-check: sqlite3 cannot load the installed shim"; exit 1; }; \
	$(MAKE) --no-print-directory uninstall DESTDIR=$$d PREFIX=/usr >/dev/null; \
	left=$$(find $$d -type f -o -type l); \
	[ -z "$$left" ] || { echo "install-check: uninstall left $$left"; exit 1; }; \
	echo "install-check: the /usr tree is complete; quickstart (C) shared, --static, -static and the C++ example shared and -static build with pkg-config and pass; sqlite3 loads the shim; uninstall removes everything"

abi-check: release-lib
	@command -v abidiff >/dev/null || { echo "abi-check: abidiff missing (Debian: abigail-tools)"; exit 1; }
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	abidw $(ABIDW_FLAGS) $(BLIB)/libtshm.so.$(VERSION) > $$tmp/now.abi; \
	n=$$(grep -c "<elf-symbol name='tshm_" $$tmp/now.abi); \
	[ $$n -gt 0 ] || { echo "abi-check: abidw saw no tshm_ symbols"; exit 1; }; \
	grep -q "<function-decl name='tshm_open'" $$tmp/now.abi || { echo "abi-check: no type information (debug info missing)"; exit 1; }; \
	abidiff --suppressions abi/suppressions --no-added-syms $(ABI_BASELINE) $$tmp/now.abi > $$tmp/diff || { cat $$tmp/diff; echo "abi-check: the ABI differs from $(ABI_BASELINE)"; exit 1; }; \
	echo "abi-check: $$n exported functions, their types as in $(ABI_BASELINE)"

abi-baseline: release-lib
	@mkdir -p $(dir $(ABI_BASELINE))
	abidw $(ABIDW_FLAGS) $(BLIB)/libtshm.so.$(VERSION) > $(ABI_BASELINE)

TEST_EXTRA += install-check abi-check check-man
