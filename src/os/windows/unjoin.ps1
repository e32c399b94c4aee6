$r = Invoke-CimMethod -InputObject (Get-CimInstance -ClassName Win32_ComputerSystem) -MethodName UnjoinDomainOrWorkgroup -Arguments @{FUnjoinOptions=0}; 'ReturnValue = ' + $r.ReturnValue
