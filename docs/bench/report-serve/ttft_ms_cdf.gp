# ttft_ms_cdf: time to first token: distribution (CDF) (drawn by herd bench --report; data in ttft_ms_cdf.dat)
set terminal pngcairo size 960,560 font 'sans,10'
set output 'ttft_ms_cdf.png'
set title "time to first token: distribution (CDF)"
set xlabel "time to first token (ms)"
set ylabel "fraction of samples at or below"
set grid
set key below
set yrange [0:*]
plot 'ttft_ms_cdf.dat' index 0 using 1:2 with steps lw 2 title "agents 1", 'ttft_ms_cdf.dat' index 1 using 1:2 with steps lw 2 title "agents 4", 'ttft_ms_cdf.dat' index 2 using 1:2 with steps lw 2 title "agents 16"
set terminal svg size 960,560 font 'sans,10' background '#ffffff'
set output 'ttft_ms_cdf.svg'
replot
unset output
