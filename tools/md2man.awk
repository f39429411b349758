# SPDX-License-Identifier: MIT
# md2man.awk: turns docs/PROTOCOL.md into pairmesh-protocol(7), so the man
# page is the document itself and cannot drift from it. It knows the
# Markdown that file uses and no more: headings, paragraphs, fenced code,
# "-" and "1." lists with indented continuation lines, pipe tables (as
# tbl(1) tables), `code`, **bold**, *italic*. POSIX awk (mawk is enough).
#
#   awk -v name=pairmesh-protocol -v section=7 -v date=... -v source=...
#       -f tools/md2man.awk docs/PROTOCOL.md

# roff escapes for a line of text (no formatting yet).
function esc(s)
{
	gsub(/\\/, "\\e", s)
	gsub(/§/, "\\(sc", s)
	return s
}

# Inline Markdown to roff fonts. Code spans first, so a "*" inside one is
# left alone; their text is kept aside while the rest is converted.
function inline(s,    out, n, i, code, pre)
{
	s = esc(s)
	n = 0
	out = ""
	while (match(s, /`[^`]*`/)) {
		code[++n] = substr(s, RSTART + 1, RLENGTH - 2)
		out = out substr(s, 1, RSTART - 1) "\001" n "\002"
		s = substr(s, RSTART + RLENGTH)
	}
	s = out s
	while (match(s, /\*\*[^*]+\*\*/))
		s = substr(s, 1, RSTART - 1) "\\fB" \
		    substr(s, RSTART + 2, RLENGTH - 4) "\\fR" \
		    substr(s, RSTART + RLENGTH)
	while (match(s, /\*[^ *][^*]*\*/))
		s = substr(s, 1, RSTART - 1) "\\fI" \
		    substr(s, RSTART + 1, RLENGTH - 2) "\\fR" \
		    substr(s, RSTART + RLENGTH)
	for (i = 1; i <= n; i++) {
		match(s, "\001" i "\002")
		s = substr(s, 1, RSTART - 1) "\\fB" code[i] "\\fR" \
		    substr(s, RSTART + RLENGTH)
	}
	return s
}

# A text line must not start a request.
function line(s)
{
	if (s ~ /^[.']/)
		s = "\\&" s
	print s
}

function trim(s)
{
	sub(/^[ \t]+/, "", s)
	sub(/[ \t]+$/, "", s)
	return s
}

# One row of a pipe table into cells[1..n]; returns n.
function cells_of(s, cells,    n, i, parts)
{
	s = trim(s)
	sub(/^\|/, "", s)
	sub(/\|$/, "", s)
	n = split(s, parts, "|")
	for (i = 1; i <= n; i++)
		cells[i] = trim(parts[i])
	return n
}

function end_table(    i, j, r, fmt, cells, n, c)
{
	if (!nrows)
		return
	fresh = 0
	print ".TS"
	print "allbox tab(\t);"
	fmt = ""
	for (j = 1; j <= ncols; j++)
		fmt = fmt (j > 1 ? " " : "") "lb"
	print fmt
	fmt = ""
	for (j = 1; j <= ncols; j++)
		fmt = fmt (j > 1 ? " " : "") "lx"
	print fmt "."
	for (r = 1; r <= nrows; r++) {
		n = cells_of(rows[r], cells)
		for (j = 1; j <= ncols; j++) {
			c = j <= n ? inline(cells[j]) : ""
			printf "T{\n%s\nT}%s", c, j < ncols ? "\t" : "\n"
		}
	}
	print ".TE"
	nrows = 0
}

# Ends whatever block is open: paragraph, list item, table.
function flush()
{
	end_table()
	inpara = 0
	initem = 0
}

# A paragraph break, but none right after a heading (mandoc warns).
function para()
{
	if (!fresh)
		print ".PP"
	fresh = 0
}

BEGIN {
	nrows = 0
	incode = 0
	title = 0
}

incode {
	if ($0 ~ /^```/) {
		print ".EE"
		print ".in"
		incode = 0
		next
	}
	line(esc($0))
	next
}

/^```/ {
	flush()
	para()
	print ".in +2n"
	print ".EX"
	incode = 1
	next
}

/^# / {
	flush()
	t = substr($0, 3)
	up = toupper(name)
	printf ".TH %s %s %s \"%s\"\n", up, section, date, source
	print ".SH NAME"
	printf "%s \\- %s\n", name, esc(t)
	print ".SH DESCRIPTION"
	fresh = 1
	next
}

/^## / {
	flush()
	printf ".SH \"%s\"\n", toupper(esc(substr($0, 4)))
	fresh = 1
	next
}

/^### / {
	flush()
	printf ".SS \"%s\"\n", esc(substr($0, 5))
	fresh = 1
	next
}

/^[ \t]*\|/ {
	if (!nrows)
		flush()
	if ($0 ~ /^[ \t]*\|[ \t:|-]+\|[ \t]*$/ && $0 ~ /---/)
		next			# the header's underline
	rows[++nrows] = $0
	if (nrows == 1)
		ncols = cells_of($0, hdr)
	next
}

/^[ \t]*$/ {
	flush()
	next
}

/^- / {
	flush()
	fresh = 0
	print ".IP \\(bu 2"
	line(inline(substr($0, 3)))
	initem = 1
	next
}

/^[0-9]+\. / {
	flush()
	match($0, /^[0-9]+\./)
	fresh = 0
	printf ".IP %s 4\n", substr($0, 1, RLENGTH)
	line(inline(trim(substr($0, RLENGTH + 1))))
	initem = 1
	next
}

{
	if (nrows)
		flush()
	if (initem) {
		line(inline(trim($0)))
		next
	}
	if (!inpara) {
		para()
		inpara = 1
	}
	line(inline(trim($0)))
}

END {
	flush()
	print ".SH \"SEE ALSO\""
	print ".BR pairmesh (1),"
	print ".BR pairmesh (3)"
}
