#!/bin/sh
# Runs the hook or script $1: itself when it is executable, else by sh
# (VCL's /etc/init.d/vcl_post_load need not be executable).
if [ -x "$1" ]; then exec "$1"; else exec sh "$1"; fi
