#ifndef SOTTO_CSQLITE_SHIM_H
#define SOTTO_CSQLITE_SHIM_H

// The system SQLite (Debian libsqlite3-dev, pkg-config sqlite3), for the CoAP server's message store.
#include <sqlite3.h>

// SQLITE_TRANSIENT is a cast of -1 to a function pointer, which Swift cannot import: this hands
// it over so that sqlite3_bind_blob copies the bytes before the Swift buffer goes away.
static inline sqlite3_destructor_type sotto_sqlite_transient(void) {
    return SQLITE_TRANSIENT;
}

#endif
