#!/bin/sh
# build-stage.sh runs the build stage of deploy/container/Dockerfile as plain
# shell commands, since Docker cannot run everywhere (CI, this machine). It
# reads the Dockerfile itself, so the test follows the file:
#
#   deploy/container/build-stage.sh [WORKDIR]
#
# Instructions of the first stage are executed in order: WORKDIR, ARG, ENV,
# COPY (from the build context, the repository root, minus the entries of
# Dockerfile.dockerignore) and RUN (with /bin/sh -ec). The stage's absolute
# paths /src and /out are mapped to WORKDIR/src and WORKDIR/out. On success
# WORKDIR/out/rootfs holds the final image's files and the script prints it.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
context=$(cd "$here/../.." && pwd)
dockerfile="$here/Dockerfile"
ignore="$here/Dockerfile.dockerignore"
root=${1:-$(mktemp -d "${TMPDIR:-/tmp}/mrbacd-build-stage.XXXXXX")}
mkdir -p "$root/src" "$root/out"
root=$(cd "$root" && pwd)

# map rewrites the stage's /src and /out paths into $root.
map() {
	printf '%s' "$1" | sed -E "s#(^|[[:space:]=:\"'])/(src|out)(/|[[:space:]]|\$)#\\1$root/\\2\\3#g"
}

# copy_context SRC... DEST copies build-context files like COPY does.
copy_context() {
	dest=$(eval "printf '%s' \"\$$#\"")
	case "$dest" in /*) ;; *) dest="$cwd/$dest" ;; esac
	n=$#
	i=1
	excludes=""
	if [ -f "$ignore" ]; then
		while IFS= read -r pat; do
			case "$pat" in ''|'#'*) continue ;; esac
			case "$pat" in
			'**/'*) excludes="$excludes --no-anchored --exclude=${pat#'**/'}" ;;
			*) excludes="$excludes --anchored --exclude=./${pat#/}" ;;
			esac
		done < "$ignore"
	fi
	mkdir -p "$dest"
	for src in "$@"; do
		[ "$i" -lt "$n" ] || break
		i=$((i + 1))
		if [ "$src" = "." ]; then
			# shellcheck disable=SC2086
			(cd "$context" && tar -cf - $excludes .) | (cd "$dest" && tar -xf -)
		else
			cp -a "$context/$src" "$dest/"
		fi
	done
}

cwd="$root"
stage=0
instr=""
# Join continuation lines, drop comments, stop at the second FROM.
sed -e 's/\r$//' "$dockerfile" | awk '
	/^[[:space:]]*#/ { next }
	{ line = line $0 }
	/\\$/ { sub(/\\$/, "", line); next }
	{ if (line ~ /[^[:space:]]/) print line; line = "" }
' > "$root/instructions"

while IFS= read -r instr; do
	kw=$(printf '%s' "$instr" | awk '{print toupper($1)}')
	args=$(printf '%s' "$instr" | sed -E 's/^[[:space:]]*[A-Za-z]+[[:space:]]+//')
	case "$kw" in
	FROM)
		stage=$((stage + 1))
		[ "$stage" -le 1 ] || break
		continue
		;;
	esac
	[ "$stage" -eq 1 ] || continue
	args=$(map "$args")
	echo "build-stage: $kw $args" >&2
	case "$kw" in
	WORKDIR) cwd="$args"; mkdir -p "$cwd" ;;
	ENV)
		for kv in $args; do export "${kv?}"; done
		;;
	ARG)
		name=${args%%=*}
		if [ "$name" != "$args" ] && eval "[ -z \"\${$name:-}\" ]"; then export "$args"; fi
		;;
	COPY)
		# shellcheck disable=SC2086
		copy_context $args
		;;
	RUN) (cd "$cwd" && /bin/sh -ec "$args") ;;
	*) echo "build-stage: unsupported instruction $kw" >&2; exit 1 ;;
	esac
done < "$root/instructions"

echo "$root/out/rootfs"
