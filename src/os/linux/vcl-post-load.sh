#!/bin/sh
# Prints the image's own VCL post-load scripts that exist, in the order
# Apache VCL's Linux.pm post_load runs them.
for f in /usr/local/vcl/vcl_post_load /etc/init.d/vcl_post_load; do
  if [ -f "${REIMAGE_ROOT:-}$f" ]; then printf '%s\n' "${REIMAGE_ROOT:-}$f"; fi
done
exit 0
