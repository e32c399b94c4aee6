#!/bin/sh
case "$*" in
"list chains") printf 'table inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t}\n\tchain output {\n\t\ttype filter hook output priority filter; policy accept;\n\t}\n}\n' ;;
"-a list chain inet filter input") printf 'table inet filter {\n\tchain input { # handle 1\n\t\ttype filter hook input priority filter; policy drop;\n'; cat "$(dirname "$0")/chain"; printf '\t}\n}\n' ;;
"-f /dev/stdin") cat >> "$(dirname "$0")/log" ;;
"-c -f "*) exit 0 ;;
*) echo "unexpected: $*" >&2; exit 1 ;;
esac
