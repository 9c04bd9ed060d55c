# latency_ms_cdf: request latency: distribution (CDF) (drawn by herd bench --report; data in latency_ms_cdf.dat)
set terminal pngcairo size 960,560 font 'sans,10'
set output 'latency_ms_cdf.png'
set title "request latency: distribution (CDF)"
set xlabel "request latency (ms)"
set ylabel "fraction of samples at or below"
set grid
set key below
set yrange [0:*]
plot 'latency_ms_cdf.dat' index 0 using 1:2 with steps lw 2 title "agents 1", 'latency_ms_cdf.dat' index 1 using 1:2 with steps lw 2 title "agents 4", 'latency_ms_cdf.dat' index 2 using 1:2 with steps lw 2 title "agents 16"
set terminal svg size 960,560 font 'sans,10' background '#ffffff'
set output 'latency_ms_cdf.svg'
replot
unset output
