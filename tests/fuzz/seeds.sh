#!/bin/sh
# Build the seed corpora in tests/fuzz/corpus/<target>/ from ../shared/voevents (relative to the
# repository root): every packet, every invalid input, the control. Files over 1 MiB are
# truncated to 1 MiB. The frame target gets framed copies (4 header bytes choosing the
# limit and read sizes, then one or more VTP frames); the transport target also gets
# hand-written Transport messages and round-trip inputs.
# Usage: tests/fuzz/seeds.sh [SHARED_DIR]   (run from anywhere; existing corpora are kept)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
shared=${1:-$here/../../../shared/voevents}
corpus=$here/corpus
max=1048576
[ -d "$shared" ] || { echo "seeds.sh: no $shared" >&2; exit 1; }
mkdir -p "$corpus/frame" "$corpus/transport" "$corpus/xml" "$corpus/voevent"

# be32 N: the 4-byte big-endian length prefix.
be32() {
  printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $(($1 >> 24 & 255)) $(($1 >> 16 & 255)) $(($1 >> 8 & 255)) $(($1 & 255)))"
}

i=0
for f in "$shared"/*.xml "$shared"/invalid/*.xml "$shared"/invalid/*.bin "$shared"/invalid/control/*.xml; do
  [ -f "$f" ] || continue
  i=$((i + 1))
  name=$(basename "$f")
  tmp=$corpus/.seed.$$
  head -c $max "$f" > "$tmp"
  for t in transport xml voevent; do cp "$tmp" "$corpus/$t/$name"; done
  n=$(wc -c < "$tmp")
  # Header: limit 1 MiB; read sizes alternate between whole 64 KiB reads and odd
  # small ones with an EINTR.
  case $((i % 3)) in
    0) hdr='\000\000\000\000' ;;
    1) hdr='\000\001\007\377' ;;
    2) hdr='\000\061\000\003' ;;
  esac
  { printf "$hdr"; be32 "$n"; cat "$tmp"; } > "$corpus/frame/$name"
  rm -f "$tmp"
done

# Several frames back to back (an empty one too), and a few limit edge cases.
ctl="$shared/invalid/control/valid-base.xml"
if [ -f "$ctl" ]; then
  n=$(wc -c < "$ctl")
  { printf '\000\005\000\000'; be32 "$n"; cat "$ctl"; be32 0; be32 "$n"; cat "$ctl"; printf '\000\000'; } \
    > "$corpus/frame/multi"
  { printf '\005\000\000\000'; be32 1; printf x; be32 2; printf yy; } > "$corpus/frame/small-limit"
fi
printf '\000\000\000\000\377\377\377\377' > "$corpus/frame/too-large"
printf '\000\000\000\000\334\005\000\000' > "$corpus/frame/little-endian"
printf '\000\000\000\000\000\000\000\012abc' > "$corpus/frame/truncated"

# Transport messages as Comet, pygcn and voevent-client write them.
ns=http://www.telescope-networks.org/xml/Transport/v1.1
for role in iamalive authenticate ack nak; do
  printf '%s\n%s\n' "<?xml version='1.0' encoding='UTF-8'?>" \
    "<trn:Transport xmlns:trn=\"$ns\" version=\"1.0\" role=\"$role\"><Origin>ivo://bolide.test/broker</Origin><Response>ivo://bolide.test/sub</Response><TimeStamp>2024-01-01T00:00:00Z</TimeStamp><Meta><Result>Event rejected: x &amp; y</Result><Param name=\"xpath-filter\" value=\"//Param[@name=&quot;a&quot;]\"/><filter type=\"xpath\">//Who</filter></Meta></trn:Transport>" \
    > "$corpus/transport/comet-$role"
done
printf '%s' '<?xml version="1.0" encoding="UTF-8"?><trn:Transport role="iamalive" version="1.0" xmlns:trn="http://telescope-networks.org/schema/Transport/v1.1"><Origin>ivo://gcn</Origin><TimeStamp>2024-01-01T12:00:00.123456</TimeStamp></trn:Transport>' \
  > "$corpus/transport/pygcn-iamalive"
# Round-trip inputs: control byte, then 0xFF-separated origin, response, result/filters.
printf '\007\377ivo://a.b/c#1\377 ivo://me.test/b \377Event rejected: <&>\r\n' > "$corpus/transport/rt-result"
printf '\011\377ivo://x.y/z\377\377//Param[@name="a" and @value>6]\377\t\n\r\377' > "$corpus/transport/rt-filters"
printf '\000\377\377' > "$corpus/transport/rt-empty"
# IVOIDs for the voevent target's ivorn checks.
printf 'ivo://bolide.test/a/b#c' > "$corpus/voevent/ivoid-ok"
printf 'ivo://bolide.test/a/../b#c' > "$corpus/voevent/ivoid-traversal"

for t in frame transport xml voevent; do
  echo "seeds: $t: $(ls "$corpus/$t" | wc -l) files"
done
