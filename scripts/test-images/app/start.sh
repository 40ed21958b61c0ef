#!/bin/sh
# The test app's entry point. Its behaviour is chosen by the environment:
#   MSG=text        what GET / answers (default "hello")
#   CRASH=reason    print two log lines and exit 3 at once
#   NEVER_LISTEN=1  run without ever listening
#   WS=1            answer WebSocket-style upgrades on 8080 and echo the bytes
#   START_DELAY=s   wait s seconds before listening (a slow start-up)
#   WWW=dir         serve from dir (default /www; /tmp/www under a read-only root)
echo "test app starting: ${MSG:-hello}"
if [ -n "$CRASH" ]; then
  echo "fatal: $CRASH"
  echo "test app giving up" >&2
  exit 3
fi
if [ -n "$NEVER_LISTEN" ]; then
  exec sleep 3600
fi
if [ -n "$START_DELAY" ]; then
  sleep "$START_DELAY"
fi
if [ -n "$WS" ]; then
  exec nc -ll -p 8080 -e /app/ws.sh
fi
WWW=${WWW:-/www}
mkdir -p "$WWW/cgi-bin"
echo "${MSG:-hello}" > "$WWW/index.html"
echo ok > "$WWW/health"
cp /app/cgi/headers /app/cgi/echo "$WWW/cgi-bin/"
chmod 755 "$WWW"/cgi-bin/*
exec httpd -f -p 8080 -h "$WWW"
