# memory: Memory (PSS) (drawn by herd bench --report; data in memory.dat)
set terminal pngcairo size 960,560 font 'sans,10'
set output 'memory.png'
set title "Memory (PSS)"
set xlabel "batch size"
set ylabel "MiB"
set grid
set key below
set yrange [0:*]
plot 'memory.dat' using 1:2 with linespoints lw 2 pt 7 title "process PSS", 'memory.dat' using 1:3 with linespoints lw 2 pt 7 title "process RSS", 'memory.dat' using 1:4 with linespoints lw 2 pt 7 title "weights"
set terminal svg size 960,560 font 'sans,10' background '#ffffff'
set output 'memory.svg'
replot
unset output
