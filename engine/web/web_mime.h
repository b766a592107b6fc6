/* web_mime: the Content-Type of a file, from its name's extension.
 *
 * One sorted table of the types a web site serves (pages, styles,
 * scripts, images, fonts, media, documents, archives); an unknown or
 * missing extension is application/octet-stream, which a browser offers
 * to save rather than guesses at. Text types carry `charset=utf-8`. The
 * match is case-insensitive on the last extension of the name only:
 * `app.3f9a1c2e.js` is a script. */
#ifndef STRATA_WEB_MIME_H
#define STRATA_WEB_MIME_H

#include <stddef.h>

/* The type for the file name `name` (`len` bytes; a path is fine: only
 * what follows its last '/' is read). Never NULL. */
const char *web_mime_type(const char *name, size_t len);

#endif
