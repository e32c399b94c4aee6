if ($env:COMPUTERNAME -ne '@name@') { Rename-Computer -NewName '@name@' -Force -ErrorAction Stop; '@renamed@' } else { 'computer name @name@' }
