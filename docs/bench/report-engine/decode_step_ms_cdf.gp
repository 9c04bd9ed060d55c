# decode_step_ms_cdf: decode step time: distribution (CDF) (drawn by herd bench --report; data in decode_step_ms_cdf.dat)
set terminal pngcairo size 960,560 font 'sans,10'
set output 'decode_step_ms_cdf.png'
set title "decode step time: distribution (CDF)"
set xlabel "decode step time (ms)"
set ylabel "fraction of samples at or below"
set grid
set key below
set yrange [0:*]
plot 'decode_step_ms_cdf.dat' index 0 using 1:2 with steps lw 2 title "batch size 1", 'decode_step_ms_cdf.dat' index 1 using 1:2 with steps lw 2 title "batch size 2", 'decode_step_ms_cdf.dat' index 2 using 1:2 with steps lw 2 title "batch size 4", 'decode_step_ms_cdf.dat' index 3 using 1:2 with steps lw 2 title "batch size 8"
set terminal svg size 960,560 font 'sans,10' background '#ffffff'
set output 'decode_step_ms_cdf.svg'
replot
unset output
