# The C++17 wrapper, include/tshm.hpp (header-only): its example as a test.
#
#   make cpp-test    checks that tshm.hpp compiles warning-free on its own and included twice
#                    (C++17, C++20) and with -fno-exceptions, and defines no macro but its include guard (beyond what
#                    tshm.h and the standard headers it includes define); builds
#                    examples/cpp/example.cpp with $(CXX) against the test library and runs it
#                    on both lock backends (it exits non-zero when any step misbehaves)
#
# $(CXXFLAGS) comes after the wrapper's own flags, so it can add to them or override them.

CPP_BIN      := $(B)/cpp
CXXFLAGS_CPP := -std=c++17 -O1 -g -Wall -Wextra -Werror -pedantic -Iinclude

.PHONY: cpp-test cpp-header-check

$(CPP_BIN)/example: examples/cpp/example.cpp include/tshm.hpp include/tshm.h $(TEST_SO)
	@mkdir -p $(CPP_BIN)
	$(CXX) $(CXXFLAGS_CPP) $(CXXFLAGS) -o $@ $< -L$(TLIB) -ltshm -Wl,-rpath,$(abspath $(TLIB))

cpp-header-check:
	@for std in c++17 c++20; do \
	    printf '#include "tshm.hpp"\n#include "tshm.hpp"\n' | \
	        $(CXX) -x c++ -std=$$std -pedantic -Wall -Wextra -Werror -Iinclude -fsyntax-only - || exit 1; \
	done
	@printf '#include "tshm.hpp"\nint main() { std::error_code ec; tshmpp::handle h("x", ec); return !ec; }\n' | \
	    $(CXX) -x c++ -std=c++17 -pedantic -Wall -Wextra -Werror -fno-exceptions -Iinclude -fsyntax-only -
	@tmp=$$(mktemp -d); \
	{ echo '#include "tshm.h"'; grep '^#include <' include/tshm.hpp; } | \
	    $(CXX) -x c++ -std=c++17 -Iinclude -dM -E - | awk '{print $$2}' | sort > $$tmp/c; \
	printf '#include "tshm.hpp"\n' | $(CXX) -x c++ -std=c++17 -Iinclude -dM -E - | awk '{print $$2}' | sort > $$tmp/cpp; \
	extra=$$(comm -13 $$tmp/c $$tmp/cpp | grep -v -x TSHM_HPP || true); \
	rm -rf $$tmp; \
	if [ -n "$$extra" ]; then echo "tshm.hpp defines macros beyond its include guard: $$extra"; exit 1; fi
	@echo "tshm.hpp compiles as C++17 and C++20, included twice, and with -fno-exceptions; it defines only TSHM_HPP"

cpp-test: cpp-header-check $(CPP_BIN)/example
	@set -e; for backend in ofd posix; do \
	    echo "== tshm.hpp example ($$backend locks)"; \
	    TSHM_LOCK_BACKEND=$$backend $(CPP_BIN)/example; \
	done

TEST_EXTRA += cpp-test
