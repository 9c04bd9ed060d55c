# cmake -DOUT=file.c -DFILES="sym1=path1|sym2=path2" -P embed.cmake
# Writes each file as `const unsigned char sym[]` (NUL-terminated) and
# `const size_t sym_len` (without the NUL).
set(body "#include <stddef.h>\n")
string(REPLACE "|" ";" files "${FILES}")
foreach(pair ${files})
  string(REPLACE "=" ";" kv "${pair}")
  list(GET kv 0 sym)
  list(GET kv 1 path)
  file(READ "${path}" hex HEX)
  string(LENGTH "${hex}" n)
  math(EXPR len "${n} / 2")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," arr "${hex}")
  string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" arr "${arr}")
  string(APPEND body "const unsigned char ${sym}[] = {\n${arr}0x00};\nconst size_t ${sym}_len = ${len};\n")
endforeach()
file(WRITE "${OUT}" "${body}")
