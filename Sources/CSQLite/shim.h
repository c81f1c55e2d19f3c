#ifndef LANYARD_CSQLITE_SHIM_H
#define LANYARD_CSQLITE_SHIM_H
#include <sqlite3.h>
#endif
