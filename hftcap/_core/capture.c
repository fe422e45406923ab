#include "mold.h"
