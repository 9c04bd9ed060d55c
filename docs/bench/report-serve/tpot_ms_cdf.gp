# tpot_ms_cdf: time per output token: distribution (CDF) (drawn by herd bench --report; data in tpot_ms_cdf.dat)
set terminal pngcairo size 960,560 font 'sans,10'
set output 'tpot_ms_cdf.png'
set title "time per output token: distribution (CDF)"
set xlabel "time per output token (ms)"
set ylabel "fraction of samples at or below"
set grid
set key below
set yrange [0:*]
plot 'tpot_ms_cdf.dat' index 0 using 1:2 with steps lw 2 title "agents 1", 'tpot_ms_cdf.dat' index 1 using 1:2 with steps lw 2 title "agents 4", 'tpot_ms_cdf.dat' index 2 using 1:2 with steps lw 2 title "agents 16"
set terminal svg size 960,560 font 'sans,10' background '#ffffff'
set output 'tpot_ms_cdf.svg'
replot
unset output
