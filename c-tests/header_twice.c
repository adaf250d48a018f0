/* Compile-only: the public header is self-contained, idempotent and valid C and C++. */
#include "tshm.h"
#include "tshm.h"

int header_twice_dummy(void);
int header_twice_dummy(void) { return TSHM_OK; }
