#!/bin/sh
chpasswd < "$1"; rc=$?; rm -f "$1"; [ $rc -eq 0 ] && echo "password of root set"; exit $rc
