# apt_install PACKAGE...: installs the Debian packages that are not installed yet (through
# sudo unless root).
apt_install() {
  local missing=() pkg sudo=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  printf '[setup] installing apt packages: %s\n' "${missing[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# apt_extract_tool PACKAGE TOOL DIR: puts /usr/bin/TOOL of the Debian package PACKAGE in DIR
# without installing the package (whose scripts would start a server).
apt_extract_tool() {
  local package=$1 tool=$2 dir=$3 work sudo=()
  [ -x "$dir/$tool" ] && return 0
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  printf '[setup] extracting %s from the Debian package %s\n' "$tool" "$package"
  work=$(mktemp -d)
  (cd "$work" && { apt-get download -qq "$package" 2>/dev/null \
    || { "${sudo[@]}" apt-get update -qq && apt-get download -qq "$package"; }; })
  dpkg-deb -x "$work"/"$package"_*.deb "$work/root"
  mkdir -p "$dir"
  install -m 755 "$work/root/usr/bin/$tool" "$dir/$tool"
  rm -rf "$work"
}
