#!/bin/sh
# Shows what the app saw of the request, so tests can check the gateway's headers.
printf 'Content-Type: text/plain\r\n\r\n'
echo "uri=$REQUEST_URI"
echo "host=$HTTP_HOST"
echo "xff=$HTTP_X_FORWARDED_FOR"
echo "xfproto=$HTTP_X_FORWARDED_PROTO"
echo "xfhost=$HTTP_X_FORWARDED_HOST"
echo "xfprefix=$HTTP_X_FORWARDED_PREFIX"
