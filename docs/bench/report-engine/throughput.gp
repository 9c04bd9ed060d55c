# throughput: Throughput (drawn by herd bench --report; data in throughput.dat)
set terminal pngcairo size 960,560 font 'sans,10'
set output 'throughput.png'
set title "Throughput"
set xlabel "batch size"
set ylabel "tokens/s"
set grid
set key below
set yrange [0:*]
plot 'throughput.dat' using 1:2 with linespoints lw 2 pt 7 title "prompt processing tokens/s", 'throughput.dat' using 1:3 with linespoints lw 2 pt 7 title "generation tokens/s", 'throughput.dat' using 1:4 with linespoints lw 2 pt 7 title "generation tokens/s per sequence"
set terminal svg size 960,560 font 'sans,10' background '#ffffff'
set output 'throughput.svg'
replot
unset output
