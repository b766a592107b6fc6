/* crc32c: the Castagnoli CRC (iSCSI polynomial) that frames log and snapshot
 * records.
 *
 * Why CRC32C and not a faster non-linear hash: a CRC of this degree detects
 * every single-bit error and every burst shorter than 32 bits with
 * certainty, which is exactly the damage a disk or a torn sector does, and
 * x86-64 computes it in hardware (SSE4.2) at several GB/s. A table-driven
 * version is used where the instruction is missing. */
#ifndef STRATA_CRC32C_H
#define STRATA_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extends `crc` (0 to start) over n bytes. crc32c(crc32c(0,a),b) equals the
 * CRC of a followed by b. */
uint32_t crc32c(uint32_t crc, const void *p, size_t n);

/* The table-driven version on its own, so tests can check both agree. */
uint32_t crc32c_portable(uint32_t crc, const void *p, size_t n);

/* The stored form of a CRC. Records often contain CRCs of their own bytes
 * (a snapshot inside a log, a log inside a snapshot); storing the raw value
 * makes such nesting weaker, so stored CRCs are rotated and offset. */
static inline uint32_t crc32c_mask(uint32_t crc)
{
    return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

#endif
